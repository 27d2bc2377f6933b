"""Onset / offset / speech-bounds detection of the latency benchmark, on signals with known edges."""

from __future__ import annotations

import numpy as np
import pytest

from voice.bench.stats import summarize, ratio
from voice.bench.utterances import default_utterances
from voice.client import signal as sig

SR = 48000


def tone(seconds: float, amp: float = 0.3, f: float = 300.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * f * t)).astype(np.float32)


def noise(seconds: float, db: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * SR)) * 10 ** (db / 20)).astype(np.float32)


def test_speech_bounds_ignore_click_and_low_noise() -> None:
    x = noise(2.0, -70)
    x[int(0.05 * SR) : int(0.08 * SR)] += 0.05  # 30 ms click: not speech
    x[int(0.5 * SR) : int(1.5 * SR)] += tone(1.0)  # "speech" 0.5 .. 1.5 s
    b = sig.speech_bounds(x, SR)
    assert abs(b.start / SR - 0.5) <= 0.011
    assert abs(b.end / SR - 1.5) <= 0.011


def test_speech_bounds_silent_file_raises() -> None:
    with pytest.raises(ValueError):
        sig.speech_bounds(np.zeros(SR, dtype=np.float32), SR)


def test_onset_needs_confirmation_and_is_precise() -> None:
    floor = -70.0
    x = noise(1.0, floor)
    x[int(0.2 * SR) : int(0.2 * SR) + 96] += 0.5  # a 2 ms click at 200 ms: ignored
    x[int(0.6 * SR) :] += tone(0.4)  # the agent starts at 600 ms
    thr = sig.agent_threshold_db(sig.noise_floor_db(x[: int(0.15 * SR)], SR))
    i = sig.detect_onset(x, SR, thr)
    assert i is not None
    assert abs(i / SR - 0.6) <= 0.006  # one 5 ms hop
    # not enough audio after the rise to confirm yet -> None
    assert sig.detect_onset(x[: int(0.6 * SR) + 48], SR, thr) is None


def test_offset_after_hold_and_not_in_short_pauses() -> None:
    x = np.zeros(int(2.0 * SR), dtype=np.float32)
    x[: int(0.5 * SR)] = tone(0.5)
    # 150 ms pause between words, then more speech until 1.0 s, then silence
    x[int(0.65 * SR) : int(1.0 * SR)] = tone(0.35)
    thr = sig.agent_threshold_db(sig.SILENCE_DB)
    off = sig.detect_offset(x, SR, thr, hold_ms=400)
    assert off is not None and abs(off / SR - 1.0) <= 0.006
    # still talking (no 400 ms silence yet)
    assert sig.detect_offset(x[: int(1.2 * SR)], SR, thr, hold_ms=400) is None


def test_default_questions_have_speech() -> None:
    utts = default_utterances()
    assert len(utts) >= 4
    for u in utts:
        assert 0.05 < u.bounds.start / SR < 0.5  # flite leaves a short lead-in
        assert u.speech_s > 0.8


def test_stats_percentiles_and_ratio() -> None:
    s = summarize([float(v) for v in range(1, 101)])
    assert s is not None and s.n == 100 and s.max == 100
    assert s.p50 == pytest.approx(50.5) and s.p90 == pytest.approx(90.1)
    assert summarize([]) is None
    assert ratio(s, s) == pytest.approx(1.0)
