"""The cascade stages a trace runs through, behind one small interface (real or fake).

    stages = load_stages(StagesSpec())                      # Whisper tiny.en + SmolLM2 + piper joe
    stages = load_stages(StagesSpec(StageKind.FAKE))        # instant deterministic stand-ins (tests)
    stages = load_stages(StagesSpec(StageKind.FAKE, 0.2))   # the same, sleeping 0.2 s per stage

`StagesSpec.parse("real" | "fake" | "fake:SECONDS")` reads the `--stages` option.

A worker process loads its stages once (models stay in memory) and reuses them for every trace.
"""

from __future__ import annotations

import enum
import re
import time
import zlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from model.common.audio_constants import SPEECH_SR
from model.common.errors import ParleyError
from distill.voices import UserVoice, pitch_shift, word_timings

SYSTEM_PROMPT = (
    "You are Parley, a friendly voice assistant talking with a person. Reply in one or two short "
    "spoken sentences, plain words only: no lists, no markdown, no emojis."
)
LLM_MAX_NEW_TOKENS = 64
LLM_TEMPERATURE = 0.5  # a calmer teacher than the chat default: the 135M model rambles when hotter
LLM_MAX_SENTENCES = 2  # generation stops after the 2nd sentence (clean_reply keeps 2 anyway)
_SENT_END = re.compile(r"[.!?](?:\s|$)")


def enough_sentences(parts: list[str], max_sentences: int = LLM_MAX_SENTENCES) -> bool:
    """The teacher's stop rule on a reply's text pieces so far: the last piece ends a sentence
    and ``max_sentences`` sentences have ended."""
    return bool(parts) and parts[-1].rstrip().endswith((".", "!", "?")) and \
        len(_SENT_END.findall("".join(parts))) >= max_sentences


class StageKind(str, enum.Enum):
    REAL = "real"  # the models
    FAKE = "fake"  # deterministic stand-ins


@dataclass(frozen=True)
class StagesSpec:
    """Which stages a worker loads; `str()` gives the `--stages` text kept in the manifest."""

    kind: StageKind = StageKind.REAL
    sleep_s: float = 0.0  # fake stages only: sleep this long per trace stage (kill tests)

    @classmethod
    def parse(cls, text: str) -> "StagesSpec":
        """"real" | "fake" | "fake:SECONDS" -> StagesSpec; ParleyError otherwise."""
        kind, _, seconds = text.partition(":")
        try:
            spec = cls(StageKind(kind), float(seconds) if seconds else 0.0)
        except ValueError:
            raise ParleyError(f"unknown stages {text!r} (real, fake or fake:SECONDS)") from None
        if spec.kind is StageKind.REAL and seconds:
            raise ParleyError(f"unknown stages {text!r} (real, fake or fake:SECONDS)")
        return spec

    def __str__(self) -> str:
        return f"fake:{self.sleep_s:g}" if self.kind is StageKind.FAKE and self.sleep_s else self.kind.value


class Stages(Protocol):
    models: dict[str, str]  # stage -> model name / version (stored in every trace)

    def user_tts(self, voice: UserVoice, text: str) -> np.ndarray: ...  # float32 at SPEECH_SR (16 kHz)

    def asr(self, audio_16k: np.ndarray) -> str: ...

    def llm(self, messages: list[dict], seed: int) -> tuple[str, dict | None]: ...  # text, teacher tokens

    def agent_tts(self, text: str) -> tuple[np.ndarray, int, list[list], str]: ...  # audio, sr, words, how


def _pkg_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


class FakeStages:
    """Deterministic, model-free stand-ins: tones for speech, hashes for text. For tests."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.models = {"user_tts": "fake", "asr": "fake", "llm": "fake", "agent_tts": "fake"}

    def _tones(self, text: str, sr: int) -> tuple[np.ndarray, list[list]]:
        words = text.split() or ["..."]
        out, spans, t = [], [], 0.0
        for w in words:
            f = 150 + zlib.crc32(w.encode()) % 400
            n = int(0.12 * sr + 0.03 * sr * len(w))
            out.append(0.3 * np.sin(2 * np.pi * f * np.arange(n) / sr).astype(np.float32))
            spans.append([w, round(t, 3), round(t + n / sr, 3)])
            t += n / sr
        return np.concatenate(out), spans

    def user_tts(self, voice: UserVoice, text: str) -> np.ndarray:
        time.sleep(self.delay)
        return pitch_shift(self._tones(text, SPEECH_SR)[0], voice.semitones)

    def asr(self, audio_16k: np.ndarray) -> str:
        time.sleep(self.delay)
        q = np.round(audio_16k * 1000).astype(np.int32)
        return f"heard {len(audio_16k)} samples, id {zlib.crc32(q.tobytes()) % 100000}"

    def llm(self, messages: list[dict], seed: int) -> tuple[str, dict | None]:
        time.sleep(self.delay)
        n_user = sum(m["role"] == "user" for m in messages)
        return f"Okay. This is reply {seed % 1000} to turn {n_user}.", {"tokens": [1, 2], "logprobs": [-0.5, -0.25]}

    def agent_tts(self, text: str) -> tuple[np.ndarray, int, list[list], str]:
        time.sleep(self.delay)
        x, spans = self._tones(text, 22050)
        return x, 22050, spans, "fake"


class TTSStages:
    """The speech stages only: piper joe (deterministic) and the espeak-ng / flite users
    (model.components.tts). A TTS worker process of the batched path loads just these."""

    def __init__(self, threads: int = 1) -> None:
        from distill.voices import DeterministicPiper

        self.piper = DeterministicPiper(threads=threads)
        self._voices: dict = {}
        self.models = {
            "user_tts": "espeak-ng / flite (model.components.tts), piper joe-medium (noise 0)",
            "agent_tts": f"piper en_US-joe-medium (noise 0), piper-tts {_pkg_version('piper-tts')}",
        }

    def user_tts(self, voice: UserVoice, text: str) -> np.ndarray:
        from model.audio import resample

        if voice.tts == "piper:joe":
            x, sr = self.piper.synthesize(text, voice.speed), self.piper.sample_rate
        else:
            if voice.tts not in self._voices:
                from model.components.tts import load_voice

                self._voices[voice.tts] = load_voice(voice.tts)
            v = self._voices[voice.tts]
            x, sr = v.synthesize(text, speed=voice.speed), v.sample_rate
        x = resample(np.asarray(x, np.float32), sr, SPEECH_SR) if sr != SPEECH_SR else np.asarray(x, np.float32)
        return pitch_shift(x, voice.semitones)

    def agent_tts(self, text: str) -> tuple[np.ndarray, int, list[list], str]:
        x, spans = self.piper.synthesize_aligned(text)
        words, how = word_timings(text, spans, len(x) / self.piper.sample_rate)
        return x, self.piper.sample_rate, words, how


class RealStages(TTSStages):
    """Whisper (model.components.asr), the LLM (model.components.llm) and the speech stages."""

    def __init__(self, asr: str | None = "tiny.en", llm: str = "smollm2", threads: int = 1, device: str = "cpu",
                 llm_dtype: str | None = None) -> None:
        """``asr=None``: no Whisper (speak-only data, distill/batched.py). ``llm_dtype``: None is the
        component's default (fp16 decoding on CPU); "float32" (batched path) also drops the prefill copy."""
        import torch

        from model.components.asr import WhisperASR
        from model.components.llm import load_llm

        torch.set_num_threads(threads)
        super().__init__(threads)
        self.whisper = WhisperASR.load(asr, device=device) if asr else None
        self.chat = load_llm(llm, device=device, dtype=llm_dtype, prefill_dtype=None if llm_dtype else "auto")
        self.models = {
            **self.models,
            "asr": f"whisper {asr} (model.components.asr)" if asr else "none: the planned user text",
            "llm": f"{llm} (model.components.llm), T={LLM_TEMPERATURE}, top-p 0.9, max {LLM_MAX_NEW_TOKENS} tokens, "
                   f"stop after {LLM_MAX_SENTENCES} sentences",
            "versions": f"parley {_pkg_version('parley')}, torch {torch.__version__}, "
                        f"openai-whisper {_pkg_version('openai-whisper')}",
        }

    def asr(self, audio_16k: np.ndarray) -> str:
        return self.whisper.transcribe(audio_16k).strip()

    def llm(self, messages: list[dict], seed: int) -> tuple[str, dict | None]:
        """-> (reply text, {"tokens": teacher token ids, "logprobs": log p of each} or None)."""
        kw = dict(max_new_tokens=LLM_MAX_NEW_TOKENS, temperature=LLM_TEMPERATURE, top_p=0.9, seed=seed)
        if not hasattr(self.chat, "stream_steps"):  # remote backends give text only
            return self.chat.chat(messages, **kw), None
        toks, lps, parts = [], [], []
        for st in self.chat.stream_steps(messages, logprobs=True, **kw):
            if st.token >= 0:
                toks.append(int(st.token))
                lps.append(round(float(st.logprob), 4) if st.logprob is not None else None)
            if st.text:
                parts.append(st.text)
                if enough_sentences(parts):
                    break  # enough for a spoken reply: save the decoding time
        return "".join(parts), {"tokens": toks, "logprobs": lps}


def load_stages(spec: StagesSpec, threads: int = 1) -> Stages:
    if spec.kind is StageKind.REAL:
        return RealStages(threads=threads)
    return FakeStages(spec.sleep_s)
