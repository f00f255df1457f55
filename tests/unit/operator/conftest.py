"""Fixtures of the operator's unit tests: settings, a session, its spec."""

from __future__ import annotations

import sys
from pathlib import Path

# Test this checkout's operator, whatever checkout the venv's editable install maps
# (pyproject's pytest `pythonpath` would be the better home for this).
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "operator"))

import pytest
from opfixtures import ENV

from voicefleet_operator.api import VoiceSessionSpec
from voicefleet_operator.config import Settings, load_settings
from voicefleet_operator.manifests import SessionRef


@pytest.fixture
def settings() -> Settings:
    return load_settings(ENV)


@pytest.fixture
def session() -> SessionRef:
    return SessionRef(namespace="voicefleet", name="alice-agent66", uid="0b1e-uid")


@pytest.fixture
def spec() -> VoiceSessionSpec:
    return VoiceSessionSpec(agent_id="agent-66", user_identity="alice")
