"""Settings come from the contract's environment variables; dispatch metadata from the operator."""

from __future__ import annotations

import pytest

from voicefleet_worker.config import ConfigError, DispatchMetadata, Settings

ENV = {
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LIVEKIT_API_KEY": "key",
    "LIVEKIT_API_SECRET": "a-secret-of-many-characters",
    "LETTA_BASE_URL": "http://127.0.0.1:8283/",
    "VOICEFLEET_AGENT_NAME": "voicefleet-worker-7fz2q",
}


def test_settings_defaults_follow_the_contract() -> None:
    settings = Settings.from_env(ENV)
    assert settings.health_port == 8081
    assert settings.health_host == "127.0.0.1"
    assert settings.plugins == "offline"
    assert settings.flush_timeout_seconds == 10.0
    assert settings.letta_base_url == "http://127.0.0.1:8283"
    assert settings.letta_api_key is None


def test_secrets_never_appear_in_the_settings_repr() -> None:
    settings = Settings.from_env({**ENV, "LETTA_API_KEY": "letta-secret-token"})
    assert "a-secret-of-many-characters" not in repr(settings)
    assert "letta-secret-token" not in repr(settings)


def test_missing_variables_are_named() -> None:
    with pytest.raises(ConfigError, match="VOICEFLEET_AGENT_NAME"):
        Settings.from_env({k: v for k, v in ENV.items() if k != "VOICEFLEET_AGENT_NAME"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VOICEFLEET_HEALTH_PORT", "http"),
        ("VOICEFLEET_HEALTH_PORT", "70000"),
        ("VOICEFLEET_FLUSH_TIMEOUT_SECONDS", "-1"),
        ("VOICEFLEET_FLUSH_TIMEOUT_SECONDS", "soon"),
    ],
)
def test_bad_numbers_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**ENV, name: value})


def test_dispatch_metadata_of_the_contract_parses() -> None:
    meta = DispatchMetadata.parse(
        '{"session": "voicefleet/alice-agent66", "agentId": "agent-66", "connection": 2, '
        '"userIdentity": "alice"}'
    )
    assert meta == DispatchMetadata("voicefleet/alice-agent66", "agent-66", 2, "alice")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        "[]",
        '{"session": "s", "agentId": "a"}',
        '{"session": "s", "agentId": "a", "userIdentity": "u", "connection": 0}',
        '{"session": "s", "agentId": "a", "userIdentity": "u", "connection": true}',
    ],
)
def test_bad_dispatch_metadata_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError):
        DispatchMetadata.parse(raw)
