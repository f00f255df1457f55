"""The offline speech plugins on real models: espeak-ng speaks, faster-whisper hears it back."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest
from livekit import rtc

from voicefleet_worker.config import ConfigError
from voicefleet_worker.plugins import (
    EspeakTTS,
    FasterWhisperSTT,
    load_plugins,
    parse_wav,
    resample,
)

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng missing: make deps installs it"
)


def test_wav_from_a_pipe_with_placeholder_sizes_parses() -> None:
    pcm = struct.pack("<4h", 1, -1, 2, -2)
    fmt = struct.pack("<HHIIHH", 1, 1, 22050, 44100, 2, 16)
    wav = (
        b"RIFF"
        + b"\xff\xff\xff\x7f"
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + b"\xff\xff\xff\x7f"
        + pcm
    )
    assert parse_wav(wav) == (22050, pcm)


def test_resampling_keeps_duration() -> None:
    one_second = np.zeros(22050, dtype=np.float32)
    assert resample(one_second, 22050, 16000).size == 16000


def test_unknown_plugin_set_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="VOICEFLEET_PLUGINS"):
        load_plugins("cloud-magic")


@needs_espeak
async def test_espeak_speech_is_transcribed_by_whisper() -> None:
    speaker = EspeakTTS.load()
    frames = [ev.frame async for ev in speaker.synthesize("hello world")]
    audio = rtc.combine_audio_frames(frames)
    assert audio.sample_rate == 22050 and audio.duration > 0.5
    listener = FasterWhisperSTT.load()
    event = await listener.recognize(frames)
    assert "hello world" in event.alternatives[0].text.lower()
