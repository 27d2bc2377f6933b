"""Shared helpers for tests/test_components_*.py: real speech WAVs and loaded models (cached)."""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest

from model.common.audio_constants import SPEECH_SR
from model.audio import load_audio
from model.samples import have_prompts, prompt_wav

needs_prompts = pytest.mark.skipif(
    not have_prompts(), reason="needs asterisk-core-sounds-en-g722 + ffmpeg (demos/setup.sh installs them)"
)


def speech(name: str) -> np.ndarray:
    """A real recorded prompt (asterisk-core-sounds-en) as 16 kHz float32."""
    return load_audio(prompt_wav(name), SPEECH_SR)[0]


@functools.lru_cache(maxsize=1)
def asr():
    from model.components.asr import WhisperASR

    return WhisperASR.load("tiny.en")


@functools.lru_cache(maxsize=1)
def faster_whisper():
    fw = pytest.importorskip("faster_whisper")
    from model.components.asr import bundled_ct2_dir

    return fw.WhisperModel(str(bundled_ct2_dir()), device="cpu", compute_type="float32", cpu_threads=2)


def fw_transcribe(x: np.ndarray) -> str:
    segs, _ = faster_whisper().transcribe(x, language="en", beam_size=1, without_timestamps=True,
                                          condition_on_previous_text=False)
    return " ".join(s.text.strip() for s in segs)


def words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split()


def wer(ref: str, hyp: str) -> float:
    import jiwer

    return float(jiwer.wer(" ".join(words(ref)), " ".join(words(hyp))))


def parley(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess (as a user would)."""
    return subprocess.run([sys.executable, "-m", "voice", *args], capture_output=True, text=True, timeout=300)
