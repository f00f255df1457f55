"""The browser client in Debian Chromium, driven by playwright-core (tests/e2e/browser.mjs).

Screenshots land in test-artifacts/e2e/<test>/. The conversation test needs the operator and
a worker; it skips with the reason when the stack has neither yet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Any

import pytest
from webharness import Gateway, Letta, StandInOperator, StandInWorker, operator_running

REPO = Path(__file__).resolve().parents[2]
E2E = REPO / "tests" / "e2e"

pytestmark = pytest.mark.integration

ARTIFACTS = REPO / "test-artifacts" / "e2e"


def run_browser(
    gateway: Gateway | str, token: str, test: str, tmp_path: Path, **env: str
) -> dict[str, Any]:
    url = gateway if isinstance(gateway, str) else gateway.url
    artifacts = ARTIFACTS / test
    shutil.rmtree(artifacts, ignore_errors=True)
    node = shutil.which("node") or "node"
    # Chromium's singleton socket path must stay short (a pytest tmp_path is too long).
    home = tempfile.mkdtemp(prefix="vf-e2e-")
    try:
        proc = subprocess.run(
            [node, str(E2E / "browser.mjs")],
            cwd=E2E,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            env={
                "PATH": os.environ.get("PATH", ""),
                "GATEWAY_URL": url,
                "GATEWAY_TOKEN": token,
                "ARTIFACTS": str(artifacts),
                "E2E_HOME": home,
                **env,
            },
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"browser.mjs printed no result (exit {proc.returncode}): {proc.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert proc.returncode == 0, json.dumps(result, indent=1)[-4000:]
    return result


def test_page_lists_agent_66(
    browser_ready: None,
    e2e_gateway: Gateway | str,
    e2e_letta: Letta,
    stack_env: dict[str, str],
    tmp_path: Path,
) -> None:
    result = run_browser(e2e_gateway, stack_env["GATEWAY_TOKEN"], "lists-agents", tmp_path)
    assert "Agent_66" in [a["name"] for a in result["agents"]]
    assert not [c for c in result["console"] if c.startswith("pageerror")]


def test_join_type_disconnect_reconnect_stand_in_operator(
    browser_ready: None,
    e2e_stand_in_operator: StandInOperator,
    e2e_gateway: Gateway | str,
    stack_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """With the STAND-IN operator (no worker): the page gets a token, joins the real LiveKit
    room, sends a typed message on lk.chat, disconnects through the gateway (waiting for its
    answer) and reconnects, three times, each time in a new room."""
    if isinstance(e2e_gateway, str):
        pytest.skip("the stack's own gateway serves real sessions: the stand-in is not for it")
    result = run_browser(
        e2e_gateway,
        stack_env["GATEWAY_TOKEN"],
        "join-stand-in",
        tmp_path,
        E2E_MODE="join",
        CYCLES="3",
    )
    assert [c["cycle"] for c in result["cycles"]] == [1, 2, 3]
    rooms = {c["info"].split("room ")[-1] for c in result["cycles"]}
    assert len(rooms) == 3
    assert not [c for c in result["console"] if c.startswith("pageerror")]


def test_browser_with_the_checkout_operator_and_a_stand_in_worker(
    e2e_checkout_stack: tuple[Gateway, StandInWorker],
    stack_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The real operator of this checkout; the STAND-IN worker greets and echoes typed
    messages on lk.transcription. The page connects, sees the agent join and speak in the
    transcript, gets an answer to a typed message, disconnects and reconnects (3 cycles)."""
    gateway, worker = e2e_checkout_stack
    result = run_browser(
        gateway,
        stack_env["GATEWAY_TOKEN"],
        "checkout-operator",
        tmp_path,
        E2E_MODE="converse",
        CYCLES="3",
        EXPECT_SPOKEN=StandInWorker.GREETING,
        TYPED="hello there",
        EXPECT_TYPED="You said: hello there",
        # This operator gets no LiveKit webhooks and checks rooms every 2 s: stay until it
        # saw the user, so leaving ends the connection (until it honours end-connection).
        WAIT_USER_SEEN="1",
    )
    assert [c["answer"] for c in result["cycles"]] == [StandInWorker.GREETING] * 3
    assert result["typed"] == "You said: hello there"
    assert len(set(worker.rooms)) == 3
    assert not [c for c in result["console"] if c.startswith("pageerror")]


def worker_available(stack_dir: Path) -> str | None:
    """Why a real conversation cannot run here, or None when it can."""
    if not operator_running(stack_dir):
        return "the operator is not part of the stack yet (issue 4): no worker gets dispatched"
    return None


def _pad_with_silence(src: Path, dst: Path, before: float, after: float) -> None:
    """Chromium loops the fake microphone file: without a pause after the sentence the
    speaker never stops, so VAD never ends the turn. Pad it like a person pausing."""
    with wave.open(str(src), "rb") as r:
        params, frames = r.getparams(), r.readframes(r.getnframes())
    step = params.sampwidth * params.nchannels
    with wave.open(str(dst), "wb") as w:
        w.setparams(params)
        w.writeframes(
            b"\0" * step * int(params.framerate * before)
            + frames
            + b"\0" * step * int(params.framerate * after)
        )


def test_conversation_connect_speak_type_disconnect_reconnect(
    browser_ready: None,
    e2e_gateway: Gateway | str,
    e2e_letta: Letta,
    stack_env: dict[str, str],
    stack_dir: Path,
    tmp_path: Path,
) -> None:
    reason = worker_available(stack_dir)
    if reason:
        pytest.skip(reason)
    if e2e_letta.stand_in:
        pytest.skip("Letta is not running in the stack (a stand-in only lists agents)")
    spoken = tmp_path / "spoken.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(spoken), "Hello agent, how are you today?"], check=True, timeout=30
    )
    wav = tmp_path / "hello.wav"
    _pad_with_silence(spoken, wav, before=1.0, after=5.0)
    result = run_browser(
        e2e_gateway,
        stack_env["GATEWAY_TOKEN"],
        "conversation",
        tmp_path,
        E2E_MODE="converse",
        MIC_WAV=str(wav),
        CYCLES="5",
        # The scripted model of the local stack answers "You said: <words>".
        EXPECT_SPOKEN="You said",
        TYPED="remember my cat is Tom",
        EXPECT_TYPED="OK, I will remember",
    )
    assert len(result["cycles"]) == 5
    assert all(c["answer"] for c in result["cycles"])
    assert result["typed"] and "remember" in result["typed"]
