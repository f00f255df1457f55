from __future__ import annotations

import pytest
from opfixtures import ENV

from voicefleet_operator.config import ConfigError, load_settings


def test_settings_come_from_the_environment() -> None:
    s = load_settings(ENV)
    assert s.namespace == "voicefleet"
    assert s.livekit_http_url == "http://127.0.0.1:7880"
    assert s.worker.image == "voicefleet-worker:test"
    assert s.worker.livekit_url == "ws://127.0.0.1:7880"
    assert s.worker.letta_base_url == "http://127.0.0.1:8283"
    assert s.worker.tolerations[0]["key"] == "kwok.x-k8s.io/node"
    assert s.bind_host == "127.0.0.1"


def test_missing_livekit_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="LIVEKIT_API_SECRET"):
        load_settings({"LIVEKIT_URL": "ws://x", "LIVEKIT_API_KEY": "k"})


def test_malformed_numbers_and_json_are_named() -> None:
    with pytest.raises(ConfigError, match="VOICEFLEET_WEBHOOK_PORT"):
        load_settings({**ENV, "VOICEFLEET_WEBHOOK_PORT": "eighty"})
    with pytest.raises(ConfigError, match="VOICEFLEET_WORKER_TOLERATIONS"):
        load_settings({**ENV, "VOICEFLEET_WORKER_TOLERATIONS": "{"})


def test_the_sweep_period_is_a_setting_and_never_a_hot_loop() -> None:
    assert load_settings(ENV).sweep_seconds == 60.0
    assert load_settings({**ENV, "VOICEFLEET_SWEEP_SECONDS": "5"}).sweep_seconds == 5.0
    with pytest.raises(ConfigError, match="VOICEFLEET_SWEEP_SECONDS must be at least 1"):
        load_settings({**ENV, "VOICEFLEET_SWEEP_SECONDS": "0"})


def test_gc_thresholds_default_for_a_process_holding_many_sessions_and_are_checked() -> None:
    assert load_settings(ENV).gc_thresholds == (20000, 20, 20)
    cpython = load_settings({**ENV, "VOICEFLEET_GC_THRESHOLDS": " 700, 10,10 "})
    assert cpython.gc_thresholds == (700, 10, 10)
    for bad in ("700,10", "0,10,10", "a,b,c", "700,-1,10"):
        with pytest.raises(ConfigError, match="VOICEFLEET_GC_THRESHOLDS"):
            load_settings({**ENV, "VOICEFLEET_GC_THRESHOLDS": bad})


def test_the_api_secret_never_shows_in_the_settings_repr() -> None:
    s = load_settings({**ENV, "LETTA_API_KEY": "letta-secret-key"})
    assert ENV["LIVEKIT_API_SECRET"] not in repr(s)
    assert "letta-secret-key" not in repr(s)


def test_settings_are_frozen() -> None:
    s = load_settings(ENV)
    with pytest.raises(AttributeError):
        s.namespace = "other"  # type: ignore[misc]


def test_help_lists_every_variable_the_settings_read() -> None:
    """`python -m voicefleet_operator --help` documents exactly what load_settings reads."""
    import re
    from pathlib import Path

    from voicefleet_operator import config

    source = Path(config.__file__).read_text().split("def load_settings", 1)[1]
    read = set(re.findall(r'"((?:VOICEFLEET|LIVEKIT|LETTA)_[A-Z_]+|NAMESPACE)"', source))
    assert read <= set(config.ENV_DOC), read - set(config.ENV_DOC)
    assert all(name in config.env_help() for name in read)
