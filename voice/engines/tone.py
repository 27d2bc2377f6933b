"""A deterministic test engine: every turn is answered after a known delay with a known sound.

    parley serve --engine tone [--delay-ms 300] [--reply-s 2.0] [--reply-wav answer.wav]

The reply starts exactly `delay_ms` after the VAD ended the user's turn (server clock), so a
client measuring voice-to-voice latency should see  vad_endpoint + delay_ms + transport.
The default reply is a steady 440 Hz tone (no gaps, easy onset/offset detection) at -12 dBFS
whose "text" is the words "one two three ..." spread evenly over it, so barge-in truncation
of the history can be checked (half the tone played -> the first half of the words kept).
No model is loaded; the user's words are not recognized (the transcript names the duration).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.common.audio_constants import SPEECH_SR, WEBRTC_SR
from voice.engines.base import (
    AgentAudio,
    AgentText,
    Engine,
    EngineEvent,
    EngineSession,
    Stage,
    UserText,
    UserTurn,
)

WORDS = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen twenty").split()


@dataclass(frozen=True)
class ToneConfig:
    delay_ms: float = 300.0  # turn end (VAD decision) -> first reply sample queued
    reply_s: float = 2.0  # tone duration
    tone_hz: float = 440.0
    level: float = 0.25  # tone amplitude (-12 dBFS)
    reply_wav: str | None = None  # play this file instead of the tone
    words_per_s: float = 2.5  # "text" of the tone
    stream_speed: float = 0.0  # 0: the reply at once; s > 0: in 40 ms pieces at s x real time (s < 1: an engine behind)


def tone(cfg: ToneConfig) -> np.ndarray:
    """The reply tone, (T,) float32 at 48 kHz, with 5 ms fades (no clicks)."""
    n = int(round(cfg.reply_s * WEBRTC_SR))
    t = np.arange(n) / WEBRTC_SR
    x = cfg.level * np.sin(2 * np.pi * cfg.tone_hz * t)
    fade = min(n // 2, int(0.005 * WEBRTC_SR))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        x[:fade] *= ramp
        x[-fade:] *= ramp[::-1]
    return x.astype(np.float32)


class ToneEngine(Engine):
    name = "tone"

    def __init__(self, cfg: ToneConfig = ToneConfig()) -> None:
        self.cfg = cfg
        if cfg.reply_wav:
            from model.audio import load_audio  # noqa: PLC0415

            self.audio, self.sr = load_audio(Path(cfg.reply_wav), WEBRTC_SR)
            self.text = Path(cfg.reply_wav).stem.replace("_", " ")
        else:
            self.audio, self.sr = tone(cfg), WEBRTC_SR
            n_words = max(1, min(len(WORDS), int(round(cfg.reply_s * cfg.words_per_s))))
            self.text = " ".join(WORDS[:n_words])
        self.sessions_started = 0  # for tests

    def info(self) -> dict:
        return {"engine": self.name, "delay_ms": self.cfg.delay_ms,
                "reply_ms": round(1000 * len(self.audio) / self.sr, 1)}

    def session(self) -> "ToneSession":
        self.sessions_started += 1
        return ToneSession(self)


class ToneSession(EngineSession):
    def __init__(self, engine: ToneEngine) -> None:
        self.engine = engine
        self.history: list[dict] = []  # [{"role", "content"}], agent side = played text only

    async def respond(self, turn: UserTurn) -> AsyncIterator[EngineEvent]:
        e = self.engine
        user = f"({len(turn.audio) / SPEECH_SR:.2f} s of speech)"
        self.history.append({"role": "user", "content": user})
        yield UserText(user)
        due = turn.t_decided + e.cfg.delay_ms / 1000.0
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        yield Stage("engine", e.cfg.delay_ms)
        yield AgentText(e.text)
        if e.cfg.stream_speed <= 0:
            yield AgentAudio(e.audio, e.sr, e.text)
            return
        piece, t0 = int(0.04 * e.sr), time.monotonic()
        for k, i in enumerate(range(0, len(e.audio), piece)):
            await asyncio.sleep(max(0.0, t0 + k * 0.04 / e.cfg.stream_speed - time.monotonic()))
            yield AgentAudio(e.audio[i : i + piece], e.sr, e.text if i == 0 else "")

    def commit(self, turn: int, played_text: str, interrupted: bool) -> None:
        if played_text:
            self.history.append({"role": "assistant", "content": played_text})


def create(cfg: ToneConfig) -> ToneEngine:
    return ToneEngine(cfg)
