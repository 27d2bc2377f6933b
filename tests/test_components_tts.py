"""TTS: round trips through the ASR (piper joe, flite), clause streaming, speed, voices, bad input."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from components_util import asr, wer
from model.common.audio_constants import SPEECH_SR
from model.common.errors import ParleyError
from model.audio import resample
from model.components.tts import list_voices, load_voice, split_clauses

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it goes home to sleep."


@functools.lru_cache(maxsize=1)
def joe():
    return load_voice("joe")


def to_text(x: np.ndarray, sr: int) -> str:
    return asr().transcribe(resample(x, sr, SPEECH_SR))


def test_split_clauses() -> None:
    assert split_clauses("Hello there, how are you today? I am fine, thanks.") == [
        "Hello there, how are you today?", "I am fine, thanks."]  # "thanks." alone is too short
    assert split_clauses("Yes, Mr. Smith paid 3.5 dollars, for tea; then he left.") == [
        "Yes, Mr. Smith paid 3.5 dollars,", "for tea; then he left."]
    assert split_clauses("line one is here\n\nline two is here") == ["line one is here", "line two is here"]
    assert split_clauses("Hi!") == ["Hi!"]
    assert split_clauses(" ... ") == []


@pytest.mark.slow
def test_joe_round_trip() -> None:
    v = joe()
    assert v.sample_rate == 22050
    x = v.synthesize(SENTENCE)
    assert x.dtype == np.float32 and x.ndim == 1 and 2.0 < len(x) / v.sample_rate < 8.0
    assert np.abs(x).max() <= 1.0
    text = to_text(x, v.sample_rate)
    assert wer(SENTENCE, text) <= 0.15, text


@pytest.mark.slow
def test_flite_round_trip() -> None:
    v = load_voice("flite:slt")
    x = v.synthesize(SENTENCE)
    assert v.sample_rate == 16000
    assert wer(SENTENCE, to_text(x, v.sample_rate)) <= 0.2


@pytest.mark.slow
def test_espeak_voice_speaks() -> None:
    v = load_voice("espeak:en-us+m3")
    x = v.synthesize("Hello, how are you doing today?")
    assert v.sample_rate == 22050 and len(x) / v.sample_rate > 1.0
    assert "how are you" in to_text(x, v.sample_rate).lower()  # espeak is hard for whisper tiny


@pytest.mark.slow
def test_stream_is_clause_by_clause() -> None:
    v = joe()
    text = "First, we check the weather. Then, if it is sunny, we walk to the park together."
    parts = list(v.stream(text))
    assert len(parts) == len(split_clauses(text)) >= 3
    spoken = [to_text(p, v.sample_rate).lower() for p in parts]
    # "check" and "park": Whisper tiny.en once heard piper's sampled "weather" as "water" (CI, 2026-12-02)
    assert "check" in spoken[0] and "park" not in spoken[0]
    assert "park" in spoken[-1] and "check" not in spoken[-1]


@pytest.mark.slow
def test_speed_changes_duration_not_words() -> None:
    v = joe()
    slow, fast = v.synthesize(SENTENCE, speed=0.8), v.synthesize(SENTENCE, speed=1.5)
    assert len(fast) < 0.75 * len(slow)
    assert wer(SENTENCE, to_text(fast, v.sample_rate)) <= 0.2
    f1, f2 = load_voice("flite:slt").synthesize(SENTENCE, 1.0), load_voice("flite:slt").synthesize(SENTENCE, 1.5)
    assert len(f2) < 0.8 * len(f1)


def test_list_voices() -> None:
    names = list_voices()
    assert names[0] == "joe"
    assert "espeak:en-us+m3" in names and "flite:slt" in names
    assert len([n for n in names if n.startswith("espeak:")]) > 100
    assert len(set(names)) == len(names)


def test_bad_input() -> None:
    v = load_voice("flite:slt")
    for text in ("", "   ", "?!"):
        with pytest.raises(ParleyError, match="nothing to say"):
            v.synthesize(text)
    with pytest.raises(ParleyError, match="speed"):
        v.synthesize("hello there friend", speed=0)
    for name in ("nobody", "flite:nope", "espeak:xx-zz", "espeak:en-us+nope", "piper:/no/such.onnx"):
        with pytest.raises(ParleyError):
            load_voice(name)
