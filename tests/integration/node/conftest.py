"""Fixtures of the node tests: a VoiceSession served by the stack's operator on node-0."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reconnect_harness import Session, create_letta_agent, delete_letta_agent


@pytest.fixture
def session(kubectl: Any, stack_env: dict[str, str], stack_dir: Path) -> Iterator[Session]:
    """A session of a fresh Letta agent; its worker pods run in containers on node-0."""
    state = json.loads((stack_dir / "state.json").read_text())
    if not state["values"].get("VOICEFLEET_WORKER_IMAGE"):
        pytest.skip("the stack has no worker image: its worker pods run on host-0")
    agent_id = create_letta_agent(stack_env, prefix="node")
    s = Session(kubectl, stack_env, agent_id, prefix="node")
    yield s
    s.delete()
    delete_letta_agent(stack_env, agent_id)
    assert s.pods() == [], "the session's pods outlived its deletion"
